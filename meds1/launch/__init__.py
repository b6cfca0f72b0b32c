"""Where a command runs and sending stages to SLURM: submit | plan | run here (`dispatch`), resources per
stage (`resources`), what a command runs and what each step waits for (`plan`), submission in job arrays
chained with afterok (`submit`), what a job runs (`job`), and job states from markers and the queue
(`status`)."""
