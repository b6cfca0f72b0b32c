"""Reading results: tables, plots, the HTML page, stage status, and med-s1 import/export."""
