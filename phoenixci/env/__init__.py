"""A long-lived phoenixci environment: what `phoenixci up` creates and `phoenixci down` removes.

``state``    the environment's record (env.json in the environment directory)
``hostkeys`` SSH host keys pinned from each instance's console output
``ansible``  the playbook runner (inventory, variables, recap)
``gitrepo``  the app's own repository and its push to the CI server
``buildbot`` reading builds from the CI server's REST API
``lifecycle`` up / down / status
"""
