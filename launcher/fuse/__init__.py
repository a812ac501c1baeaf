"""The Linux FUSE kernel protocol over /dev/fuse, in pure Python."""
