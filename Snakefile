# difflab — the workflow. Every stage is a file target: `snakemake --cores 2 <file>` builds exactly
# what that file needs. Rules live in rules/*.smk; helpers and path functions in rules/common.smk.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/smoke.smk"
include: "rules/organisms.smk"
include: "rules/diffmining.smk"
include: "rules/traces.smk"
include: "rules/datagen.smk"
include: "rules/active.smk"
include: "rules/libgen.smk"


rule all:
    default_target: True
    input:
        default_targets(),
