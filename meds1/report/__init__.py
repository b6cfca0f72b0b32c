"""Reading results: the registry view (experiments), tables, plots, the HTML page, stage status,
comparisons with a baseline (comparison, paired), and what stage=report prints and writes (outputs)."""
