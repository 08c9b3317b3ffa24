"""Photos as every layer reads them: decoding with its limits and errors (``images``), the
alterations field photos carry (``field``) and contact sheets of thumbnails (``sheets``).
Imports nothing of meterid's."""
