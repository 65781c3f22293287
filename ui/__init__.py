"""The Gradio app's screens."""
