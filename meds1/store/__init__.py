"""Where results live and when two are the same: `identity` (slugs, the scope of overrides, the hashed
view of a config, the files a stage reads, a stage's recorded config), `content` (cheap digests of files,
folders and model folders), `workspace` (partial directory, marker, lock), `registry` (results.json) and
`provenance` (what produced a record)."""
