"""What the MongoDB server alone sustains for the ledger's writes: the floor under
`POST /api/track` in distributed mode, measured by bench-distributed.sh in its run.

A copy of the ledger collection's indexes and of one stored ledger document is made in a
scratch collection; CLIENTS threads then insert batches of BATCH copies (fresh `_id`s, the
server's write concern) for SECONDS, as the server's group-commit writer does, and the
number of documents stored per second is printed as `FLOOR documents/s`. The scratch
collection is dropped at the end.

    python mongodb_floor.py URI DATABASE SECONDS CLIENTS BATCH
"""
import copy
import sys
import threading
import time

import pymongo
from bson import ObjectId
from pymongo.write_concern import WriteConcern


def main():
    uri, database, seconds, clients, batch = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    client = pymongo.MongoClient(uri)
    db = client[database]
    sample = db.ledger.find_one()
    if sample is None:
        sys.exit("the ledger holds no document to copy")
    scratch = db.get_collection("floor_scratch", write_concern=WriteConcern(w="majority", j=True))
    scratch.drop()
    for index in db.ledger.list_indexes():
        if index["name"] == "_id_":
            continue
        options = {k: v for k, v in index.items() if k not in ("v", "key", "ns")}
        scratch.create_index(list(index["key"].items()), **options)
    stored = [0] * clients
    deadline = time.monotonic() + seconds

    def insert(slot):
        while time.monotonic() < deadline:
            docs = []
            for _ in range(batch):
                doc = copy.deepcopy(sample)
                doc["_id"] = {"t": sample["_id"]["t"], "e": ObjectId()}
                docs.append(doc)
            scratch.insert_many(docs, ordered=False)
            stored[slot] += batch

    began = time.monotonic()
    threads = [threading.Thread(target=insert, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - began
    scratch.drop()
    print(f"FLOOR {sum(stored) / took:.1f}")


if __name__ == "__main__":
    main()
