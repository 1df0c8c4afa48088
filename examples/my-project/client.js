var websockets = require("net/v4/websockets");
var uri = "ws://127.0.0.1:8080/websockets/v4/service/my-endpoint";
var handler = "my-project/ws-handler"

function initialize() {
    console.log("Connect to: " + uri);
    var websocket = websockets.createWebsocket(uri, handler);
    websocket.send("hello");
}

initialize();

websockets.getClientByHandler(handler).close();
