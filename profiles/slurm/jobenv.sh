# Sourced by /bin/sh on the compute node at the start of every SLURM job of the workflow (the
# `precommand` of profiles/slurm/config.yaml), before Snakemake starts in the job.
#
# PyTensor's compile cache on node-local storage (never NFS/Lustre, where its lock files are
# slow and unsafe), one per user and node, reused by later jobs on the same node.
# VIMODES_NODE_TMP picks the node-local folder (default: the job's $TMPDIR, else /tmp).
# Note: a `base_compiledir=` in PYTENSOR_FLAGS of the submitting shell wins over this.
VIMODES_COMPILEDIR="${VIMODES_NODE_TMP:-${TMPDIR:-/tmp}}/vimodes-pytensor-$(id -un)"
export VIMODES_COMPILEDIR
# HDF5 (netCDF fit and data files) file locking fails or hangs on many network file systems.
HDF5_USE_FILE_LOCKING=FALSE
export HDF5_USE_FILE_LOCKING
