"""Challenge submissions: build a folder that becomes an offline container (build), the entry point that runs inside
it (runtime: the only module the container imports), and the offline check that proves it without Docker (check)."""
