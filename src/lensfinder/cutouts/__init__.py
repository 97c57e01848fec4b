"""Cutouts (rule ``cutouts``): brick-grouped extraction from the coadds into fp16 shards.

* ``extract``: cutouts of one sweep's objects from the RICE-compressed coadds;
* ``shards``: the on-disk format (memory-mappable fp16 arrays, index tables, manifests).
"""
