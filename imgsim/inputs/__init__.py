"""Images in: scanning a folder, the one decoding path, URL fetching, thumbnails, the demo collections."""
