"""Names that torch-free code (the collector) needs: table row order and domain names.

The registries in `algorithms/` and `datasets/` hold the classes; this module holds only the
facts a login node needs to lay out a table without importing torch. Dataset classes read their
ENVIRONMENTS from here, so the names are written once.
"""

# Row order of result tables. Registered algorithms not listed here (plug-ins) come after,
# in registration order.
ALGORITHM_ORDER = ("ERM", "SGT", "DRE", "GRADIA", "RES", "CARE", "RRR", "GradMask", "HAICS",
                   "ActDiff", "ALIGN", "ALIGN_VREx", "ALIGN_IRM")

# Dataset name -> ENVIRONMENTS (table column headers), in domain-index order.
DATASET_ENVIRONMENTS = {
    "Debug28": ("0", "1", "2"),
    "SpuriousDigits": ("plain", "noise", "stripes", "gradient"),
    "VLCS": ("C", "L", "S", "V"),
    "TerraIncognita": ("L100", "L38", "L43", "L46"),
    "PACS": ("A", "C", "P", "S"),
    "OfficeHome": ("A", "C", "P", "R"),
    "DomainNet": ("clip", "info", "paint", "quick", "real", "sketch"),
}
# DomainFolder is not listed: its names come from the folder it reads. The trainer writes them
# into every record (`domain_names`), which is where the collector finds them.
