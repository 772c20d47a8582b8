"""The face-identification service and the `faceid` command line."""
