# Visual inspection fed back (lensfinder.portal.inspection): grades from the portal (lensfinder-inspect serve) -> graded
# table, new lenses, hard negatives and rejections for the next run. Not part of `rule all`
# (it needs a grades database that exists only after people grade); run it on request:
#   snakemake inspection --config inspection='{db: grades.sqlite}'
# It re-runs whenever the batch's grades change (grades_fingerprint), not only the file's time.
from lensfinder.portal.database import grades_fingerprint


rule inspection:
    input:
        db=lambda wildcards: inspection_config()["db"],
        candidates=inspection_candidates(),
    output:
        graded=f"{RESULTS}/inspection/graded.parquet",
        graded_csv=f"{RESULTS}/inspection/graded.csv",
        graded_fits=f"{RESULTS}/inspection/graded.fits",
        new_lenses=f"{RESULTS}/inspection/new_lenses.csv",
        hard_negatives=f"{RESULTS}/inspection/hard_negatives.csv",
        rejections=f"{RESULTS}/inspection/rejections.csv",
        summary=f"{RESULTS}/inspection/summary.json",
    log:
        f"{RESULTS}/logs/inspection.log",
    params:
        inspection=lambda wildcards: inspection_config(),
        batch=inspection_batch(),
        # the grades themselves: with SQLite's WAL new grades leave the file's time unchanged
        grades=lambda wildcards: grades_fingerprint(inspection_config()["db"], inspection_batch()),
    localrule: True
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/inspection.py"
