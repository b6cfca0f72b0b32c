"""What a command line means: the schema (`schema`), the rules its types cannot state (`rules`),
composition with Hydra and which overrides change a result (`compose`), and the command-line check that
runs before Hydra does (`cli`)."""
