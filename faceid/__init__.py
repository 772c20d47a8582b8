"""The `faceid` command: the top of the project, over app/, training/ and evaluation/."""
