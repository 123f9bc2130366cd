"""The use cases: one function each, shared by the pages, the JSON API, the CLI and the job
handlers (docs/architecture.md).

A use case takes the :class:`~radseg.core.Platform` first, then the acting user
(:class:`radseg.roles.Actor`) where someone acts, then plain typed keyword inputs. It validates,
checks the actor's permission, writes, audits and queues jobs; it knows nothing of HTTP or click,
and raises the typed errors of :mod:`radseg.errors`, which each front end maps in one table.

**Who owns the unit of work**: the use case. It opens its own with
``with platform.sessions.begin() as session:`` — one for a short use case, one per independent
step for long work (ingest commits series by series; training holds no transaction while it
trains) — and returns the rows it wrote (sessions keep them readable after the commit). Callers
never commit. The functions below this layer (:mod:`radseg.jobs.store`, :mod:`radseg.audit`,
:mod:`radseg.users`, ...) take a ``session`` and never commit; read-only queries that pages and
commands share (listings) take a ``session`` too.

By area: studies (:mod:`.uploads`, :mod:`.ingest`, :mod:`.studies`), datasets (:mod:`.datasets`),
models (:mod:`.training`, :mod:`.evaluation`, :mod:`.prediction`), review (:mod:`.review`,
:mod:`.corrections`), exports (:mod:`.export_jobs`, :mod:`.exporting`), jobs (:mod:`.jobs`),
administration (:mod:`.users`, :mod:`.accounts`, :mod:`.plugins`); :mod:`.lookup` is the one
get-or-404.
"""
