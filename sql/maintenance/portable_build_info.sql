-- portable_build_info: a warehouse to share (`make example`): the MultiWOZ folder of the build keeps only its
-- last name (`multiwoz`), not where it sat on the machine that built it.
UPDATE toolwoz.build_info SET source = regexp_replace(source, '^.*/', '')
