-- portable_runs: a warehouse to share (`make example`): the FACTORY_HOME its runs used becomes the text
-- `$FACTORY_HOME` in the agent column and the recorded settings. Variable `home`: that folder, absolute.
UPDATE runs SET
    agent_model = replace(agent_model, getvariable('home'), '$FACTORY_HOME'),
    config = replace(config::VARCHAR, getvariable('home'), '$FACTORY_HOME')::JSON
WHERE contains(config::VARCHAR, getvariable('home'))
