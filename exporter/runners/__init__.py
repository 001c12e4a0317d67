"""Every model load of the exporter, in one place; nothing else constructs a model class.

- ``reference``: the torch reference (``SentenceTransformer`` / ``CrossEncoder`` / ``SparseEncoder``, the class
  the kind's ``exporter.kinds.KindSpec`` names) at a source folder, and the source folder a manifest pins
  (resolved and checked against its hashes). The export (through ``BuildContext.reference_model``), verify
  and bench all load the reference with ``reference.load_reference``.
- ``variant``: a built variant, loaded the way a user loads it (``<Class>(artifact, backend=...,
  model_kwargs={"file_name": ...})``), or through the variant's own loader (quanto int8, StaticEmbedding
  graphs served by ``exporter.runtime``); optionally pinned to a thread count on the CPU.
- ``runner``: a ``Runner`` (name, backend, ``encode(inputs, batch_size)``, what actually runs it) built from
  those two, what verify's fresh process, bench and the consumers run.

Three modules, layered: builders need the reference (``reference`` imports no builder), and loading a
variant needs the builders' own format loaders (``variant`` imports them).
"""
