%% Shared by the `tern-bench remote` Erlang programs (`remote_pingpong`,
%% `remote_throughput`): finding the peer node. Compiled with them into the same
%% code path; it has no `main` and no Tern twin, so it is not a benchmark itself.
-module(remote_peer).
-export([find/1]).

%% The full name of the peer (short name Peer, on this host), once it answers
%% `net_adm:ping` (up to 200 tries, 50 ms apart).
find(Peer) ->
    [_, Host] = string:split(atom_to_list(node()), "@"),
    Node = list_to_atom(atom_to_list(Peer) ++ "@" ++ Host),
    wait_for(Node, 200),
    Node.

wait_for(Node, 0) -> erlang:error({remote_peer, no_answer_from, Node});
wait_for(Node, Tries) ->
    case net_adm:ping(Node) of
        pong -> ok;
        pang -> timer:sleep(50), wait_for(Node, Tries - 1)
    end.
