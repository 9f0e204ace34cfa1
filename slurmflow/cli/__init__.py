"""The command line: argument parsing, one library call per command, and rendering with rich.
No decisions live here.
"""
