import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while Python imports the CLI
    sys.exit(130)

main()
