"""The app's screens, one module each; each builds its components inside the caller's gr.Tab."""
