"""The ``crm`` command line, one module per topic; the only importer of ``bench``."""
