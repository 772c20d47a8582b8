"""The face-identification service: the HTTP app, its settings, the engine that schedules the core's
work, and the gallery (store + index). The `faceid` command line is in `faceid/`."""
