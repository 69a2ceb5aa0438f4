"""`edge-seg serve`: a scanner-side DICOM node (Storage SCP, durable spool, one worker, sender to PACS).

One job per module: `scp` receives, `spool` owns every file on disk and its state changes,
`tracker` decides when a series is complete, `worker` runs the `edge-seg run` pipeline,
`sender` delivers results, `watch` feeds the worker from a folder, `status` and `log` are for
operations, `service` wires them together. Only `scp` and `sender` import pynetdicom.
"""
