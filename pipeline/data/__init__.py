"""Reading collections (BEIR directories, JSONL, Parquet, Lance) and downloading public ones."""
