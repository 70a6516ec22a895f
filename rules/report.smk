# (stage rules: see README.md)
