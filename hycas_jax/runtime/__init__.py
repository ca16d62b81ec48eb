"""What the command-line tools run on: the CLI layer, checkpoints, files on any
`etils.epath` file system, run locks, the multi-device / multi-host runtime and
the persistent compilation cache."""
