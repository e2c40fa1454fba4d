"""Study results and steering vectors out of trustdyn, and vector files back in.

:mod:`~trustdyn.export.tables` writes every table of a study file as Parquet or CSV with
a manifest and reads them back; :mod:`~trustdyn.export.vectors` turns stored
mean-difference vectors into a trustdyn safetensors file and a GGUF control vector, and
reads either kind of file (or any llama.cpp / repeng control vector) back as
:class:`~trustdyn.steering.SteeringVector` objects.
"""

from trustdyn.export.tables import (
    FORMATS,
    MANIFEST,
    ExportError,
    TableExport,
    export_tables,
    read_manifest,
    read_table,
)
from trustdyn.export.vectors import (
    ARCHITECTURE,
    SCALINGS,
    VectorExport,
    VectorExportError,
    VectorRequest,
    export_vectors,
    output_paths,
    parse_layers,
    read_vector_file,
    stored_vectors,
    write_control_vector,
)

__all__ = [
    "ARCHITECTURE",
    "FORMATS",
    "MANIFEST",
    "SCALINGS",
    "ExportError",
    "TableExport",
    "VectorExport",
    "VectorExportError",
    "VectorRequest",
    "export_tables",
    "export_vectors",
    "output_paths",
    "parse_layers",
    "read_manifest",
    "read_table",
    "read_vector_file",
    "stored_vectors",
    "write_control_vector",
]
