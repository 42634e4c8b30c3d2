-- 0003_beam: one name for the JOSH beam width, from the flag to the column. Old warehouses migrate on open
-- (a read-only command migrates one too); the views that read the old name are re-created after the migrations.

-- runs.beam_size: renamed `beam`, as the flag (`--beam`), SearchConfig.beam and every query call it.
ALTER TABLE runs RENAME COLUMN beam_size TO beam;
