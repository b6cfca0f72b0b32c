"""Reading results: the registry view (experiments), tables, plots, the HTML page, stage status,
comparisons with a baseline (comparison, paired, multiplicity), published baselines (baselines), and what
stage=report prints and writes (outputs). medsone.py keeps the former `python -m meds1.report.medsone`."""
