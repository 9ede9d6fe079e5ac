"""Planning runs and executing them: papermill jobs on a Dask cluster, pre-start checks, status."""
