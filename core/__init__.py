"""The ground every layer stands on: the config schema, errors, vocabularies, shared result values, model
references and file hashes. It imports nothing of Steward's other packages."""
