"""Collection: envs and collectors (``environment``, ``ray_collection``), the train ratio (``ratio``) and the
collect/update pacing the loop runs (``parallel``: ``SyncCollection``, ``ParallelCollection``)."""
