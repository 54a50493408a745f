"""OpenPGP keys of public-key mode (``pg-backup keys``, key expiry in ``config validate`` and ``health``).

- :mod:`.openpgp`: what a key file holds (:func:`~.openpgp.read_key_file`) and the expiry verdict;
- :mod:`.host`: every key and secret file a configuration names (:data:`~.host.KEY_FILES`), inspected;
- :mod:`.make`: the restore operators' key pair, its public key, a new expiry;
- :mod:`.arguments`: the ``keys`` command line's arguments (the CLI hooks them in).

Importers name the module (``from ..keys.host import host_keys``); this file imports nothing.
"""
