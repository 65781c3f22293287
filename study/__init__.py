"""Report metrics with bootstrap statistics, reader-study storage and aggregation, UMAP, exports."""
