"""Read models and reports of submissions, shared by the CLI and the web app."""
