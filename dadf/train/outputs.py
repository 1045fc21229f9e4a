"""The files training writes into its folder, named once here: the training layer cannot import the grid's store,
whose cell folders (dadf.grid.store.CellDir) hold these files under these names."""

CHECKPOINTS = "checkpoints"  # a folder of saved steps (dadf.train.checkpoint); best/ in it holds the selected one
LOG_FILE = "log.jsonl"  # one JSON line per logged step and per validation
