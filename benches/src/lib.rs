//! `unitsync-benches`: the workloads of `WORKLOADS.md` and the baselines they are measured against.
