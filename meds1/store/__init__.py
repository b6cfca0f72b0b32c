"""Where results live and when two are the same: `identity` (slugs, the scope of overrides, the hashed
view of a config, file digests, a stage's recorded config), `workspace` (partial directory, marker, lock),
`registry` (results.json) and `provenance` (what produced a record)."""
