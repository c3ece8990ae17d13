"""Coverage-guided fuzzing of the sans-I/O SMPP core (atheris); see fuzz/README.md."""
