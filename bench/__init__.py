"""gradhealth benchmarks: every timing is a ratio measured side by side in one run."""
