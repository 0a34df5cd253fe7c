# tests/typing/ holds programs that tests/test_typing.py type-checks; pytest never imports them.
collect_ignore_glob = ["*.py"]
