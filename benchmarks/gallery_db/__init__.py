"""The gallery as a database: add, remove and filtered search at 1M x 768, FAISS and Milvus Lite side by side.

    python -m benchmarks.gallery_db.run --help
"""
