"""datagen: synthetic instruction data - generation, quality filters, privacy, metrics.

    records.py   Example (instruction, input, output + provenance) and Results: save/load JSONL and
                 Parquet, filter, pandas, export (chat messages, Alpaca), train/validation split
    filters.py   QualityFilter (lengths, exact and MinHash-LSH near-duplicates, custom filters, report)
                 and RougeNovelty (the self-instruct ROUGE-L rule)
    privacy.py   PII detection and redaction (email, phone, credit card with Luhn, IP, IBAN, national ids)
    metrics.py   basic stats, distinct-n, self-BLEU, embedding diversity and Vendi score, perplexity,
                 readability, NMF topics

Generation (self-instruct, evol-instruct, templates, constraints, augmentation), plots, the CLI, the
RL tuner and the rules land next (issue: datagen).
"""
