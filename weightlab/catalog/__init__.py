"""The run catalog: ``ROOT/catalog.sqlite`` and ``weightlab runs``.

``open_catalog(root)`` -> :class:`Catalog` (``record_start``, ``record_end``, ``close``),
written at run start and end by ``run``, ``sweep`` and ``reproduce``; ``reindex(root)``
rebuilds it from the run directories alone. See :mod:`weightlab.catalog.store`.
"""

from weightlab.catalog.reindex import reindex
from weightlab.catalog.store import CATALOG_NAME, SCHEMA_VERSION, Catalog, open_catalog

__all__ = ["CATALOG_NAME", "SCHEMA_VERSION", "Catalog", "open_catalog", "reindex"]
