"""The fast paths, in one package: the only place that touches a library's private names.

GiftGraph runs correctly on the plain paths of Strawberry, graphql-core, uvicorn and
broadcaster. What is here makes the same behaviour faster: compiled reads, the lean
executor and its plain-scalar fast path, lean resolvers (`executor`, `compiled`), the
socket handler's direct operation runner (`sockets`), shared rendering, parking and direct
delivery of events (`render`, `delivery`), and pre-framed socket writes with a leaner
uvicorn protocol (`wire`), and Strawberry's extension hooks resolved once per class
(`hooks`). `internals` reads the few private names the plain paths need
too (the graphql-core schema behind Strawberry's, ...).

`create_app` calls `accel.switch.install(settings)` once and hands the `FastPaths` it returns to the
schema, the socket handler and the app. With `Settings.accel` false (`GIFTGRAPH_ACCEL=false`)
it is `PLAIN`: every piece off. Otherwise each piece checks the library's shape first
(`<module>.shape_ok`) and stays off, logged, when that shape changed. Contract tests
(tests/unit/test_lean_executor.py, test_direct_delivery.py, test_wire_lean.py, ...)
compare each piece with the library's own behaviour.
"""
