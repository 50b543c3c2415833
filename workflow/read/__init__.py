"""What the dashboard, the API and the metrics read; nothing here writes."""
