"""From finished run folders to paper-shaped tables, claims and REPORT.md."""
