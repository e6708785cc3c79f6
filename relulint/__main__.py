# ``python -m relulint``: relulint.launch drops the working folder from sys.path before anything else is
# imported (relulint/__init__.py imports nothing), so no module planted there can run.
from relulint.launch import main

if __name__ == "__main__":
    main()
