"""`python -m exporter` runs the CLI."""

from exporter.cli import main

if __name__ == "__main__":
    main()
