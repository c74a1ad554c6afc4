"""The data half: download, read, prepare, k-core, split and the evaluation candidate sets."""
